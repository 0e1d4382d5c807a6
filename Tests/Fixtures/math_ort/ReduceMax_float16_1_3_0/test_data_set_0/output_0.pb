
By0J*DCEúG¨CÓAKBA