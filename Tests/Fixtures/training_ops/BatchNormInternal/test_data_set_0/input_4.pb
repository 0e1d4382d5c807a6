B	input_varJŠº?
¦a?