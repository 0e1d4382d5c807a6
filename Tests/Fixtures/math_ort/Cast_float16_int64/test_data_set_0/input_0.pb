
Bx0J(ОтL4РHР;АOХWDOYSV¶9П