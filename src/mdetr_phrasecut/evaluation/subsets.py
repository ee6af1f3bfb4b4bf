"""PhraseCut subsets: which diagnostic subsets a phrase belongs to, as the published PhraseCut evaluator decides.

The vocabularies below (COCO categories, stuff names, attribute types) are the facts of the public
PhraseCut API (github.com/ChenyunWu/PhraseCutDataset, utils/subset.py). Rules, per phrase:
category rank in `name_att_rel_count.json` (missing names rank 501), best attribute rank (missing or no
attribute: 201), phrase structure, instance count, GT mask size relative to the image, stuff by substring of
the category name, attribute types, and whether the image comes from COCO (a `coco_id` of 0 counts as not).
"""

SUBSETS = (
    "all", "c_coco", "c20", "c100", "c500", "c21-100", "c101-500", "c500+",
    "i_single", "i_multi", "i_many",
    "p_name", "p_att", "p_att+", "p_rel", "p_rel+", "p_verbose", "p_attm", "p_relm",
    "t_stuff", "t_obj",
    "s_small", "s_mid", "s_large",
    "a20", "a100", "a200", "a21-100", "a101-200", "a200+",
    "a_color", "a_shape", "a_material", "a_texture", "a_state", "a_adj", "a_noun", "a_loc", "a_count", "a_bad",
    "p_att_rel",
    "d_cocotv", "d_notcocotv",
)  # the evaluator's order: per-phrase subset lists and reported metrics follow it

COCO_CATEGORIES = frozenset({
    "person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
    "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
    "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
    "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
    "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
    "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
    "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
    "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase", "scissors",
    "teddy bear", "hair drier", "toothbrush",
})

# A category is stuff when one of these occurs as a substring of its name ("wall" makes "wallet" stuff too).
STUFF_NAMES = (
    "water", "waterdrops", "sea", "river", "fog", "ground", "field", "platform", "rail", "pavement", "road",
    "gravel", "mud", "dirt", "snow", "sand", "solid", "hill", "mountain", "stone", "rock", "wood", "sky",
    "cloud", "vegetation", "straw", "moss", "branch", "leaf", "leaves", "bush", "tree", "grass", "forest",
    "railing", "net", "cage", "fence", "building", "roof", "tent", "bridge", "skyscraper", "house", "food",
    "vegetable", "salad", "textile", "banner", "blanket", "curtain", "cloth", "napkin", "towel", "mat", "rug",
    "stairs", "light", "counter", "mirror", "cupboard", "cabinet", "shelf", "table", "desk", "door", "window",
    "floor", "carpet", "ceiling", "wall", "brick", "metal", "plastic", "paper", "cardboard", "street",
    "shadow", "sidewalk", "plant", "wave", "reflection", "ocean", "beach",
)

ATTRIBUTE_TYPES = {
    "a_color": frozenset({
        "white", "black", "blue", "green", "brown", "red", "yellow", "gray", "grey", "silver", "orange", "dark",
        "pink", "tan", "purple", "beige", "bright", "gold", "colorful", "blonde", "light brown", "light blue",
        "colored", "multicolored", "maroon", "dark blue", "dark brown", "golden", "dark green", "black and white",
        "blond", "evergreen", "light colored", "dark grey", "multi-colored", "light skinned", "dark colored",
        "multi colored", "blue and white", "light green", "bright blue", "red and white", "dark gray",
        "cream colored", "light grey", "teal", "navy blue", "turquoise", "murky", "navy",
    }),
    "a_shape": frozenset({
        "large", "small", "tall", "long", "big", "short", "round", "grassy", "little", "thick", "square", "thin",
        "sliced", "curved", "rectangular", "flat", "high", "wide", "stacked", "arched", "chain link", "circular",
        "bent", "cut", "huge", "metallic", "cream", "pointy", "extended", "curly", "skinny", "pointed", "narrow",
        "piled", "tiny", "vertical", "oval", "curled", "row", "straight", "smaller", "triangular", "horizontal",
        "crossed", "sharp", "upside down", "pointing", "chopped", "slice", "rectangle", "shallow", "wispy",
        "rounded", "piece", "scattered", "giant", "slanted", "tied", "sparse", "circle", "patchy", "tilted", "fat",
        "upright", "larger",
    }),
    "a_material": frozenset({
        "wooden", "metal", "wood", "brick", "cloudy", "glass", "concrete", "plastic", "stone", "tiled",
        "cement", "dirt", "sandy", "leafy", "fluffy", "rocky", "snowy", "leather", "steel", "paper",
        "chocolate", "tile", "ceramic", "grass", "furry", "iron", "water", "stainless steel", "hardwood",
        "marble", "khaki", "cardboard", "porcelain", "snow covered", "asphalt", "chrome", "rock", "wicker",
        "rubber", "denim", "muddy", "foamy", "granite", "bricked", "gravel", "snow-covered", "clay", "sand",
        "red brick",
    }),
    "a_texture": frozenset({
        "clear", "wet", "striped", "dirty", "paved", "shiny", "painted", "dry", "plaid", "clean", "blurry",
        "hazy", "floral", "rusty", "splashing", "cloudless", "worn", "smooth", "checkered", "spotted",
        "patterned", "reflecting", "wrinkled", "reflective", "shining", "choppy", "rough", "reflected", "rusted",
        "lined", "fuzzy", "blurred", "faded", "printed", "foggy", "dusty", "glazed", "rippled", "transparent",
        "frosted",
    }),
    "a_state": frozenset({
        "standing", "open", "sitting", "walking", "parked", "hanging", "playing", "closed", "empty", "on",
        "looking", "watching", "flying", "eating", "skiing", "covered", "surfing", "skateboarding", "full",
        "jumping", "holding", "close", "leaning", "running", "riding", "folded", "waiting", "moving", "laying",
        "grazing", "off", "talking", "parking", "calm", "posing", "crashing", "melted", "skating", "seated",
        "raised", "playing tennis", "sleeping", "opened", "broken", "resting", "dried", "snowboarding",
        "crouching", "driving", "fried", "swinging", "cracked", "drinking", "burnt", "kneeling", "stopped",
        "rolling", "sitting down", "trimmed", "breaking", "crouched", "bending", "dressed", "standing up",
        "wrapped", "attached", "floating", "rolled up", "lying", "squatting", "held", "cutting", "outstretched",
        "illuminated", "reading", "turned", "swimming", "turning",
    }),
    "a_adj": frozenset({
        "young", "old", "smiling", "bare", "light", "part", "dead", "cooked", "framed", "pictured", "overcast",
        "leafless", "beautiful", "stuffed", "growing", "decorative", "electrical", "electric", "bald", "older",
        "lit", "fresh", "lush", "wire", "happy", "puffy", "sunny", "ripe", "male", "palm", "shirtless", "female",
        "asian", "hairy", "ornate", "bushy", "deep", "wavy", "toasted", "barefoot", "potted", "short sleeved",
        "edge", "wild", "busy", "decorated", "double decker", "long sleeved", "partial", "soft", "flat screen",
        "healthy", "floppy", "plain", "filled", "modern", "long sleeve", "overgrown", "displayed", "digital",
        "cast", "airborne", "delicious", "hard", "carpeted", "heavy", "new", "grilled", "sleeveless", "pale",
        "pretty", "different", "american", "nice", "fake", "designed", "cute", "manicured", "written",
    }),
    "a_noun": frozenset({
        "tennis", "baseball", "man's", "baby", "train", "woman's", "pine", "tree", "street", "passenger",
        "traffic", "computer", "adult", "ski", "man", "wine", "burgundy", "stop", "snow", "bathroom", "city",
        "teddy", "kitchen", "patch", "nike", "woman", "wall", "fire", "clock", "window", "straw", "flower",
        "ground", "pizza", "apple", "power", "coffee", "tennis player", "toy", "ocean",
    }),
    "a_loc": frozenset({
        "distant", "background", "back", "behind", "in background", "side", "up", "rear", "down", "top", "far",
        "overhead", "low", "above", "outdoors", "in distance", "in the background", "inside", "outdoor",
        "bottom", "in air",
    }),
    "a_count": frozenset({
        "one", "three", "four", "many", "pair", "several", "double", "grouped", "group", "together", "bunch",
        "alone", "set", "single",
    }),
    "a_bad": frozenset({
        "here", "present", "wearing", "in the picture", "some", "daytime", "existing", "ready", "made",
        "in picture",
    }),
}

CATEGORY_MISSING_RANK = 501
ATTRIBUTE_MISSING_RANK = 201


def _ranks(count_list):
    """{name: 0-based position} in a list of [name, count] sorted by count; the first occurrence wins."""
    ranks = {}
    for position, (name, _count) in enumerate(count_list):
        ranks.setdefault(name, position)
    return ranks


def _rank_subsets(prefix, rank, bounds):
    """Rank buckets: e.g. c20 / c21-100 / c101-500 / c500+ (disjoint) plus cumulative c100, c500."""
    top, mid, last = bounds
    bucket = (f"{prefix}{top}" if rank < top else f"{prefix}{top + 1}-{mid}" if rank < mid
              else f"{prefix}{mid + 1}-{last}" if rank < last else f"{prefix}{last}+")
    cumulative = [f"{prefix}{b}" for b in (mid, last) if rank < b]
    return {bucket, *cumulative}


class PhraseSubsets:
    """Subset membership of PhraseCut phrases, given the dataset's `name_att_rel_count.json` content."""

    def __init__(self, name_att_rel_count):
        self.category_rank = _ranks(name_att_rel_count["cat"])
        self.attribute_rank = _ranks(name_att_rel_count["att"])

    def of(self, phrase_structure, n_instances, relative_size, coco_id):
        """Subsets of one phrase, in `SUBSETS` order.

        phrase_structure: the record's `phrase_structure`; n_instances: number of instance boxes;
        relative_size: GT mask pixels / image pixels; coco_id: the image's `coco_id` (None or 0: not COCO).
        """
        name = phrase_structure["name"]
        attributes = phrase_structure["attributes"]
        n_relations = len(phrase_structure["relation_descriptions"])
        category_rank = self.category_rank.get(name, CATEGORY_MISSING_RANK)
        attribute_rank = min((self.attribute_rank[a] for a in attributes if a in self.attribute_rank),
                             default=ATTRIBUTE_MISSING_RANK)

        member = {"all", "d_cocotv" if coco_id else "d_notcocotv"}
        member.add("t_stuff" if any(stuff in name for stuff in STUFF_NAMES) else "t_obj")
        member |= _rank_subsets("c", category_rank, (20, 100, 500))
        member |= _rank_subsets("a", attribute_rank, (20, 100, 200))
        if name in COCO_CATEGORIES:
            member.add("c_coco")
        if n_instances == 1:
            member.add("i_single")
        elif 1 < n_instances < 5:
            member.add("i_multi")
        elif n_instances >= 5:
            member.add("i_many")
        member.add("s_small" if relative_size < 0.02 else "s_large" if relative_size > 0.2 else "s_mid")
        member.update(subset for flag, subset in (
            (len(attributes) > 0, "p_att"), (len(attributes) > 1, "p_attm"),
            (n_relations > 0, "p_rel"), (n_relations > 1, "p_relm"),
            (len(attributes) > 0 and n_relations > 0, "p_att_rel"),
        ) if flag)
        type_subset = {"name": "p_name", "attribute": "p_att+", "relation": "p_rel+", "verbose": "p_verbose"}
        if phrase_structure["type"] in type_subset:
            member.add(type_subset[phrase_structure["type"]])
        member.update(kind for kind, vocabulary in ATTRIBUTE_TYPES.items() if vocabulary.intersection(attributes))
        return [s for s in SUBSETS if s in member]
