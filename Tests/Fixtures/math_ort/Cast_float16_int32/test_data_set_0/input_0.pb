
Bx0JVsานัÜิ ะdQwะN๗KบPÝีอ