BscaleJ>^¿
M¼