
Bx0JFвнGм рPuST▐V%с└п▒R°в