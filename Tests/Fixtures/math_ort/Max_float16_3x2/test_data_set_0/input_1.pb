
Bx1JWøp@y∆