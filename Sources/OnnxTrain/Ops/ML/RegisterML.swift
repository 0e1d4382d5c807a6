/// The ai.onnx.ml operators, plus TfIdfVectorizer (domain "", Ops/ONNX/TfIdfVectorizer.swift),
/// the other text-feature op the ONNX suite checks.
func registerMLOps(_ registry: OpRegistry) {
    registerArrayFeatureExtractor(registry)  // Ops/ML/ArrayFeatureExtractor.swift
    registerBinarizer(registry)              // Ops/ML/Binarizer.swift
    registerLabelEncoder(registry)           // Ops/ML/LabelEncoder.swift
    registerTreeEnsemble(registry)           // Ops/ML/TreeEnsemble.swift
    registerTfIdfVectorizer(registry)        // Ops/ONNX/TfIdfVectorizer.swift
}

/// The ONNX-ML domain name.
let mlDomain = "ai.onnx.ml"
