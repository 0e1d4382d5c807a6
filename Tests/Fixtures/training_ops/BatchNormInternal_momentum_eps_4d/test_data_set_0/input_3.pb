B
input_meanJ¿°cú¾ÕS¿