
By0JyIéIøLpKGLMŠL