
By0J`>ÍE@CH@ÀA	DBDî=