import OnnxTrain
