
By0J0zDyKÊÉ÷IðÇ Î"MKÍÄÇ{ÎM-Í”ÆçÄ/L#ÃÕIYHlÏUF´IAHBÏ1F