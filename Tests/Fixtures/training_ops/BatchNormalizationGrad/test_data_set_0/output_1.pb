B
scale_gradJlÙÀ#‰¯¿