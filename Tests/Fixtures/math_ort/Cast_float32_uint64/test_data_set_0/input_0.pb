Bx0J0уPOб▀я_Aь(бHШFбF╖Bх╝ФAiЁrбйд
б"Lюбь'ЖюшA╨аWУB