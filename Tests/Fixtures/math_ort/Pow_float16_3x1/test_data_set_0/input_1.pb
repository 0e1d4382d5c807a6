
Bx1JQ<24TCÌB