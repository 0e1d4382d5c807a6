
By0JWM