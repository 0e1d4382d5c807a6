
Bx0JlQ‘ФyЧУµМгУ[P‚ФTmЦaФ