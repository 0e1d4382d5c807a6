
Bx1JMÁŽ=JD…¼