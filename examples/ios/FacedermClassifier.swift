// facederm on iOS: Vision + Core ML on the exported model.mlpackage (facederm-export RUN --target coreml).
// A sample, not a library: it cannot be compiled in facederm's CI (no Xcode on Linux); see ../README.md.
// Drag model.mlpackage into Xcode (it compiles it to FacedermModel.mlmodelc) and call classify(_:orientation:).
// facederm output is decision support for clinicians, not a diagnosis.

import CoreML
import ImageIO
import Vision

/// What the bundled model must be: the README's PAD-UFES-20 EfficientNet-Lite0 (tests/test_web_examples.py checks
/// these equal the card facederm exports for it). Labels come from the model's ClassifierConfig at run time;
/// this list only guards against bundling another model by mistake.
enum FacedermModelConstants {
    static let inputName = "image"            // RGB ImageType, scale 1: the graph normalizes itself
    static let outputName = "probabilities"   // label -> probability (softmax)
    static let predictedFeatureName = "label"
    static let inputSize = 300                // resize the shorter side to 300, center crop 300 x 300
    static let resizeShorter = 300
    static let mean: [Float] = [0.5, 0.5, 0.5]  // inside the graph; listed to check the card
    static let std: [Float] = [0.5, 0.5, 0.5]
    static let labels = ["AK", "BCC", "MEL", "NEV", "SCC", "SK"]
    static let notADiagnosis = "facederm output is decision support for clinicians, not a diagnosis."
}

struct FacedermPrediction {
    let label: String
    let probability: Float
}

enum FacedermError: Error {
    case wrongModel(String)
    case noResult
}

final class FacedermClassifier {
    private let request: VNCoreMLRequest

    /// `modelURL`: the compiled model in the app bundle (Xcode turns model.mlpackage into .mlmodelc).
    init(modelURL: URL) throws {
        let configuration = MLModelConfiguration()
        configuration.computeUnits = .all  // Neural Engine where the model allows it
        let model = try MLModel(contentsOf: modelURL, configuration: configuration)
        // Labels and their order come from the model's own ClassifierConfig.
        let labels = model.modelDescription.classLabels as? [String] ?? []
        guard labels == FacedermModelConstants.labels else {
            throw FacedermError.wrongModel("model labels \(labels) are not \(FacedermModelConstants.labels)")
        }
        guard model.modelDescription.inputDescriptionsByName[FacedermModelConstants.inputName] != nil else {
            throw FacedermError.wrongModel("model has no input named \(FacedermModelConstants.inputName)")
        }
        request = VNCoreMLRequest(model: try VNCoreMLModel(for: model))
        // The card's preprocessing: shorter side to the input size, then the center square. Vision resamples
        // with its own filter (not PIL's bilinear), so pixels differ slightly from facederm.runtime's.
        request.imageCropAndScaleOption = .centerCrop
    }

    /// Classify a photo; `orientation` is the photo's EXIF orientation (UIImage.imageOrientation converted).
    func classify(_ image: CGImage, orientation: CGImagePropertyOrientation, top: Int = 3) throws -> [FacedermPrediction] {
        let handler = VNImageRequestHandler(cgImage: image, orientation: orientation, options: [:])
        try handler.perform([request])
        guard let results = request.results as? [VNClassificationObservation], !results.isEmpty else {
            throw FacedermError.noResult
        }
        return results.sorted { $0.confidence > $1.confidence }.prefix(top)
            .map { FacedermPrediction(label: $0.identifier, probability: $0.confidence) }
    }
}
