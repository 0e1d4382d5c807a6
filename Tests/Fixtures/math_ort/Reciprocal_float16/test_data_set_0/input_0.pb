
Bx0J~Æð8jÄoµQ?fE4<×¿CDÙÁ[@ÂÁ»DyE