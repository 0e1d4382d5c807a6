
By0J0ÜOöHeNÄ>ƒ>XQAK÷ODÇE\LvJ2L›I›I²@²IC[SïB H^73TõF