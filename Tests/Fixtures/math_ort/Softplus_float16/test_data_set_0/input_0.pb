
Bx0JÙÃÂõFgC¿@ AOFy(dAxD/Â]Å“Ä´%¼