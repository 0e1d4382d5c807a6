B
saved_meanJî½ó>’An¾ò
¿