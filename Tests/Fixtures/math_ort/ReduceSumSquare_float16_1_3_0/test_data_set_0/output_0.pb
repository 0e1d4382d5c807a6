
By0J/T-P›U=P>O/VCPÐQ