
By0JX