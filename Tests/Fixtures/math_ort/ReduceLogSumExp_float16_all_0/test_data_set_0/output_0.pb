
By0J¸G