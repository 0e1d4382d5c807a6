
By0Jไม8EOฟ'CPม0ลq)FkผBก@(?่มY<D