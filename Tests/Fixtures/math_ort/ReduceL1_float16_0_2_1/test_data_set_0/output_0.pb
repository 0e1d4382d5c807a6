
By0J<LK@IN&KüL