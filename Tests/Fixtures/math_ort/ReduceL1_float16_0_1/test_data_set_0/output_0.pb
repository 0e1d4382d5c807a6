
By0J0RC?;‰B¥C9F∫@,DZEÚ?FEÎD\ErEΩCF∂DdFûC÷G§GÌD®E"D