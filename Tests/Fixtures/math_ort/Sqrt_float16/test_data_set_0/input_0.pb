
Bx0JQB¾:F?d8L;‡@ºEÍBEt@¨<ò:X=†8