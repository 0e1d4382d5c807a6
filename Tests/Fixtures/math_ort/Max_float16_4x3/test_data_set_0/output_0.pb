
By0JðNºKº¾G²»“Að°ð°¾Gð°“ANºKº¾G²»“ArBrB¾GrBrB.m9¤>·;>.m9¤>·;>AAAAACCCCCEÔB//>@EÔBAAAEÔB&&>@EÔB¸¸>@PDYÃAÉ¼H>PDð°Að°H>PDÒ½AÉ¼H>PDrBrBrBrBÇ=8B
6:Ç=8B
6:AABAACCCCC/…<//‰@AAAAA&…<&&‰@¸…<¸Ÿ·‰@