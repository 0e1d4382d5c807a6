
Bx0JIË±ÓJMyULTšTIÍU—ÐÍË…Ô«Ð