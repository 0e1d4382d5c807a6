
By0J0-B½BÆEžGI-EA€B‡@ø@B$DcHzJÒ>bGê8ÖD,??^EC”GAF