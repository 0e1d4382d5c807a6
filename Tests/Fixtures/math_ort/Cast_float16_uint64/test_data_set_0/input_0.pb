
Bx0JŠÒ„PmTÄkÑÏTŽSCS!Ï‰Ô®T)Ï