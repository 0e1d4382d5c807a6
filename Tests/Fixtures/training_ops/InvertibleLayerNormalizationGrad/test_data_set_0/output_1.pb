B
scale_gradJc์ฟt?๗N8ภา–@