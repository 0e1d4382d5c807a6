
Bx0J3HÙS6W VÃRÔ»UÍÑ(Ë<R SzL