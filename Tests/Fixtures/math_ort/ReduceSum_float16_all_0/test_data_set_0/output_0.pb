
By0JPÑ