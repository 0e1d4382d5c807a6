
updated_momentums_1 J·{Ì<= ¾‡(¿>c…>
¶4¾¨G>Jb¾S{,¾Ùi>¸«³¾