
clipped_gradients JÞy=½®¾Øp?6¹@>e¸¾R³/>Jù¥ž¾)Çg¾ís‰>=ÆÏ¾