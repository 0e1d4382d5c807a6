
By0J•G‰F F×Aâ@ãD