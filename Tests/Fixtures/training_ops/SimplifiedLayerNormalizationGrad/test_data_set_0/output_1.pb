B
scale_gradJ óß>öº¿Ã‡c¿®o£=