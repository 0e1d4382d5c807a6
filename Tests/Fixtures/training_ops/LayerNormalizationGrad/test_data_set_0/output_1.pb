B
scale_gradJD¹@º>	ÀÖj@ØuÁ>