B
saved_meanJ¶k¾õÔc>