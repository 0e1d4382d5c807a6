
By0J(IýGìF HdH{E