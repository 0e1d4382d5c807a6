
By0J0udJ^Ÿ0ø·._@hh!M%øS·Y\/-g<1ßG”IM;OED!E…;3B