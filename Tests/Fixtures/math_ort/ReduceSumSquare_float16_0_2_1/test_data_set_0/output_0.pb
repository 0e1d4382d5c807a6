
By0J!T“R·PýPmST