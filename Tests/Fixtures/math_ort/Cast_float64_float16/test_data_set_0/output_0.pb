
By0JıWÂ“¨P¿Vû 0S)’µ∂T]Iw÷<Q