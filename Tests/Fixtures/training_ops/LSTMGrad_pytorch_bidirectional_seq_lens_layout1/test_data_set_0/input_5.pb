B	initial_hJ rp?h¿bgY?lş<¿¹
.¿¿'Z?ÂîÄ¼.gl¿