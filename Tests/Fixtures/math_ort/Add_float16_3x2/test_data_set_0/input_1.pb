
Bx1JYGE‹Ç