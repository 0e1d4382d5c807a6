
By0J0aA>?<•>&GOF6AìDBÒH:F=Í@QBCF–B‰D‰CšBGEøB9:rC