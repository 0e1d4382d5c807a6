
Bx1JKDE;”5£ÅAeA„8ND<3ñ;gF