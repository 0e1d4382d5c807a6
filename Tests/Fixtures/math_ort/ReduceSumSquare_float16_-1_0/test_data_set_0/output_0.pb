
By0J0<U‚Q…AäN™H\K4RhLžM(F5LNTI·OKUI7>…KE²B`K¢RqOë(