
By0JËE¼FEHH‹E¨GZH=G