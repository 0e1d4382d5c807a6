B	initial_cJGt«¿Z‹¿0ª"¿6ß|¿sqñ>
9>