
Bx0JDX=?E¨9Fö8ÂFôDÄ@]?BDQ?ð;