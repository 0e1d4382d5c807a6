
By0Jð1ICþÀÎ@èE@G2°CE¿öAêÊA