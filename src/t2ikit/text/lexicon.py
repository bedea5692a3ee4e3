"""The English parser's hand lexicon (`t2ikit.text.english`): closed word classes, attribute kinds, relation
and style phrases, compound nouns and irregular plurals.

The closed classes (determiners, numbers, prepositions, verbs that join clauses) are the grammar; the open
classes (colours, sizes, materials, adjectives) only say what kind an attribute is and when a run of words
ends without a noun. A word in none of these lists is read by its position: the last content word of a noun
phrase is its noun, the words before it its attributes.
"""

from __future__ import annotations


def _words(text: str) -> frozenset[str]:
    return frozenset(text.split())


# --- determiners and numbers ----------------------------------------------------------------------------

ARTICLES_ONE = _words("a an one single another each every")  # a singular count of 1
DETERMINERS = ARTICLES_ONE | _words(
    "the this that these those some any all both either neither no my your his her its our their several many "
    "few multiple various other numerous lots")
NUMBERS = {w: n for n, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen twenty".split())} | {"dozen": 12, "thirty": 30, "forty": 40, "fifty": 50,
                                                      "hundred": 100}
# "a pair of shoes": the quantity noun gives the count of the noun phrase after "of" (None: a plural, count unsaid)
QUANTITY_NOUNS = {"pair": 2, "couple": 2, "trio": 3, "dozen": 12, "group": None, "herd": None, "flock": None,
                  "bunch": None, "pile": None, "stack": None, "set": None, "row": None, "pack": None,
                  "crowd": None, "swarm": None, "school": None, "collection": None, "handful": None, "lot": None}

# --- words that end a noun phrase -----------------------------------------------------------------------

PREPOSITIONS = _words(
    "on in at of with without into onto upon inside outside around across along against toward towards through "
    "from for about after before within beyond via like than as among between during throughout amid amongst "
    "past per off out up down")
CONJUNCTIONS = _words("and or but nor yet so while whereas because although though if then plus")
RELATIVES = _words("which that who whom whose where when")  # "..., which is below ..." refers back
PRONOUNS = _words("it they them he she we i you itself themselves there here something someone everything "
                  "nothing anything one's")
VERBS = _words(
    "is are was were be been being am has have had do does did can could will would shall should may might must "
    "sit sits stand stands lie lies lay lays hold holds run runs fly flies look looks appear appears show shows "
    "contain contains make makes made drawn wear wears eat eats play plays ride rides walk walks jump jumps swim "
    "swims rest rests lean leans hang hangs hung wait waits graze grazes sleep sleeps reads read feature features "
    "flash flashes shine shines sat stood held ate rode flew swam slept leaned parked seen get gets got go goes "
    "went come comes came take takes took give gives gave keep keeps kept carry carries carried pull pulls push "
    "pushes watch watches chase chases cross crosses face faces fill fills cover covers surround surrounds "
    "become becomes seem seems seemed sped drove ran fell grew threw blew drew caught brought bought built broke "
    "spun spread shone shot struck swung dug hid slid crept wept wore tore led fed bit stuck sang sank rang")
ADVERBS = _words("very quite rather too also not just only really slightly nearby together almost extremely "
                 "highly super ultra somewhat fully partly partially completely mostly empty")
AUXILIARIES = _words("is are was were be been being am has have had do does did can could will would shall should "
                     "may might must")
COPULAS = _words("is are was were be been being am looks look appears appear seems seem seemed become becomes")

# --- attributes -----------------------------------------------------------------------------------------

COLOURS = _words(
    "red green blue yellow orange purple pink brown black white gray grey silver gold golden beige tan cyan "
    "magenta violet turquoise teal navy maroon crimson scarlet indigo lavender lilac khaki ivory cream olive lime "
    "emerald azure amber bronze copper charcoal coral peach plum mauve ochre rust ruby sapphire burgundy "
    "multicolored multicoloured colorful colourful rainbow transparent translucent dark light pale bright "
    "whitish reddish bluish greenish yellowish brownish grayish greyish pinkish blond blonde")
SIZES = _words(
    "small big large tiny huge giant little tall short long narrow wide massive miniature enormous gigantic "
    "medium mini oversized thin thick fat skinny slim petite vast colossal")
MATERIALS = _words(
    "wooden wood metal metallic glass plastic leather stone marble ceramic porcelain paper cardboard fabric "
    "rubber steel iron brass concrete brick wool woolen woollen cotton silk velvet denim straw wicker bamboo "
    "crystal golden clay granite fur furry feathered plush knitted stainless chrome aluminum aluminium tin "
    "copper bronze ice icy glass")
SHAPES = _words(
    "round square rectangular circular triangular oval spherical cubic cylindrical hexagonal pentagonal "
    "octagonal conical pyramidal curved straight flat diamond heart-shaped star-shaped")
TEXTURES = _words(
    "fluffy soft hard rough smooth shiny glossy matte fuzzy bumpy spiky striped spotted dotted checkered "
    "plaid patterned wrinkled polished rusty sparkly sparkling glittery silky hairy woven")
ADJECTIVES = COLOURS | SIZES | MATERIALS | SHAPES | TEXTURES | _words(
    "old new young ancient modern vintage antique beautiful pretty ugly cute happy sad angry sleepy hungry "
    "friendly scary wet dry hot cold warm cool clean dirty broken open closed full empty heavy lightweight "
    "fresh ripe rotten wild tame fancy plain simple elegant cozy busy quiet noisy loud sunny cloudy rainy "
    "snowy foggy stormy dusty messy tidy neat rich poor strong weak fast slow famous real fake tasty "
    "delicious juicy crispy sweet sour spicy fried baked grilled sliced whole half cute lovely gorgeous "
    "magnificent majestic tiny cheerful curious fierce gentle lonely proud calm shy brave clever silly "
    "realistic detailed other same different single extra")
# colour words that are nouns when they end a phrase after another word ("a red orange", "a black olive")
COLOUR_NOUNS = _words("orange lime olive peach plum gold silver cream ivory coral rose chocolate lemon "
                      "cherry salmon mint amber ruby")
# participles that are adjectives wherever they stand ("a striped rug", "the rug is striped")
PARTICIPLE_ADJECTIVES = _words(
    "striped spotted dotted checkered tiled carved painted potted stuffed colored coloured shaded outlined "
    "filled frosted polished rusted wrinkled curled knitted woven sliced fried baked grilled roasted "
    "boiled scrambled dried folded stacked crumpled crowned winged horned bearded hooded masked armored "
    "armoured feathered glazed lit sealed abandoned broken")
# words ending in -ed / -ing that are not verb forms
NOT_PARTICIPLES = _words(
    "red bed sled shed bred sped fled wed seed reed weed need steed ing wing king ring thing string ceiling "
    "painting building clothing sibling pudding wedding bedding dumpling evening morning spring swing sing "
    "earring icing stocking sling duckling seedling fling ping viking awning lightning frosting railing "
    "carving drawing stuffing sapling gosling herring pudding cling bling offspring")

# --- relations ------------------------------------------------------------------------------------------

# phrase -> canonical relation (t2ikit.text.parser.RELATIONS); the longest phrase that matches wins
RELATION_PHRASES: dict[str, str] = {}
for _side in ("left", "right"):
    for _lead in ("to the", "on the", "at the", "in the", "to", "on", ""):
        for _tail in ("of", "side of", "hand side of"):
            RELATION_PHRASES[f"{_lead} {_side} {_tail}".strip()] = f"{_side} of"
RELATION_PHRASES.update({
    "above": "above", "on top of": "above", "on the top of": "above", "at the top of": "above", "over": "above",
    "atop": "above", "higher than": "above", "on the top side of": "above", "up above": "above",
    "below": "below", "under": "below", "underneath": "below", "beneath": "below", "on the bottom of": "below",
    "at the bottom of": "below", "lower than": "below", "on the bottom side of": "below", "down below": "below",
    "near": "near", "near to": "near", "next to": "near", "beside": "near", "besides": "near", "close to": "near",
    "by": "near", "alongside": "near", "adjacent to": "near", "on side of": "near", "on the side of": "near",
    "at the side of": "near", "by the side of": "near",
    "in front of": "in front of", "in the front of": "in front of", "on the front of": "in front of",
    "behind": "behind", "in back of": "behind", "at the back of": "behind", "in the back of": "behind",
    "hidden by": "behind", "hidden behind": "behind", "obscured by": "behind", "blocked by": "behind",
})
# words that name a place, not a thing: "on the left", "at the top" (no "of") is no object
POSITION_NOUNS = _words("left right top bottom front back middle center centre side foreground distance "
                        "corner edge mid-air midair")

# --- style ----------------------------------------------------------------------------------------------

# "a photo of ...", "an oil painting of ...": a phrase with one of these nouns followed by "of" is style
MEDIUM_NOUNS = _words(
    "photo photograph photography picture pic image painting drawing sketch illustration render rendering "
    "portrait closeup close-up shot snapshot watercolor watercolour artwork poster cartoon print engraving "
    "etching lithograph woodcut mosaic collage graphic icon logo sculpture 3d view scene still selfie "
    "depiction digital art")
# words of a trailing style phrase ("oil painting", "trending on artstation", "4k", "by Greg Rutkowski")
STYLE_WORDS = MEDIUM_NOUNS | _words(
    "oil acrylic pastel charcoal pencil ink gouache tempera fresco digital concept anime manga pixel vector "
    "photorealistic hyperrealistic realistic realism surreal surrealism impressionist impressionism "
    "expressionism cubism cubist abstract minimalist minimalism baroque renaissance gothic cyberpunk steampunk "
    "vaporwave synthwave retro studio cinematic lighting lit light volumetric dramatic soft bokeh hdr hd 4k "
    "8k uhd 1080p highly ultra very detailed intricate sharp focus resolution quality masterpiece trending "
    "artstation deviantart unreal engine octane blender cgi 35mm 50mm 85mm lens dslr macro wide-angle "
    "telephoto film analog polaroid kodak grain vibrant colors colours vivid muted monochrome monochromatic "
    "sepia grayscale greyscale black white style styled aesthetic art photorealism award winning "
    "award-winning professional national geographic magazine cover ghibli disney pixar lowpoly low-poly "
    "isometric flat 2d 3d cel shaded cel-shaded line comic book storybook children's claymation clay stop "
    "motion ukiyo-e woodblock stained glass matte background illustration outline outlines outlined silhouette "
    "solid filled shapes drawn rendered depicted shown")
BACKGROUND_NOUNS = _words("background backdrop")

# --- nouns ----------------------------------------------------------------------------------------------

# two-word nouns read as one noun ("a teddy bear": noun "teddy bear", not a "teddy" bear)
COMPOUND_NOUNS = frozenset(tuple(c.split()) for c in (
    "teddy bear", "hot dog", "cell phone", "mobile phone", "stop sign", "traffic light", "fire hydrant",
    "parking meter", "potted plant", "wine glass", "tennis racket", "baseball bat", "baseball glove",
    "sports ball", "dining table", "hair drier", "hair dryer", "tv remote", "computer keyboard",
    "computer mouse", "water bottle", "school bus", "coffee table", "coffee mug", "coffee cup", "ice cream",
    "polar bear", "fire truck", "fire engine", "police car", "race car", "sports car", "golf ball",
    "soccer ball", "tennis ball", "beach ball", "street light", "street lamp", "traffic cone", "shower curtain",
    "picture frame", "coat rack", "shoe rack", "paper plate", "soda cup", "picnic table", "counter top",
    "bath tub", "toilet paper", "french fries", "pine tree", "palm tree", "christmas tree", "sea turtle",
    "guinea pig", "hermit crab", "goldfish bowl", "fish tank", "sun flower", "light bulb", "washing machine",
    "alarm clock", "wrist watch", "laptop computer", "desk lamp", "floor lamp", "rocking chair", "arm chair",
    "office chair", "bean bag", "swimming pool", "living room", "water tower", "hot air balloon",
    "space shuttle", "teddy bears"))
# nouns ending in "s" that are singular ("a bus", "a glass")
SINGULAR_S = _words(
    "bus glass grass dress lens octopus cactus canvas compass tennis chess news gas bonus campus circus "
    "walrus platypus hippopotamus virus iris atlas asparagus hummus citrus lotus class boss moss mess cross "
    "chaos series species mathematics physics its this his is was has does us yes christmas always perhaps "
    "analysis basis axis crisis oasis thesis bias alias")
# plural nouns read without a count ("jeans", "scissors": one thing, grammatically plural)
PLURAL_ONLY = _words("skis jeans pants trousers scissors glasses sunglasses shorts pajamas binoculars headphones "
                     "earphones goggles tongs pliers clothes")
IRREGULAR_PLURALS = {
    "men": "man", "women": "woman", "people": "person", "children": "child", "mice": "mouse", "geese": "goose",
    "feet": "foot", "teeth": "tooth", "oxen": "ox", "dice": "die", "lice": "louse", "sheep": "sheep",
    "fish": "fish", "deer": "deer", "moose": "moose", "bison": "bison", "salmon": "salmon", "trout": "trout",
    "shrimp": "shrimp", "aircraft": "aircraft", "series": "series", "species": "species", "cacti": "cactus",
    "fungi": "fungus", "knives": "knife", "wives": "wife", "lives": "life", "leaves": "leaf", "wolves": "wolf",
    "shelves": "shelf", "loaves": "loaf", "calves": "calf", "halves": "half", "elves": "elf", "scarves": "scarf",
    "thieves": "thief", "hooves": "hoof", "tomatoes": "tomato", "potatoes": "potato", "heroes": "hero",
    "mangoes": "mango", "volcanoes": "volcano", "echoes": "echo", "buffaloes": "buffalo", "dominoes": "domino",
    "mosquitoes": "mosquito", "torpedoes": "torpedo", "cookies": "cookie", "movies": "movie", "pies": "pie",
    "ties": "tie", "zombies": "zombie", "hippies": "hippie", "brownies": "brownie", "selfies": "selfie",
    "horses": "horse", "houses": "house", "vases": "vase", "cases": "case", "roses": "rose", "noses": "nose",
    "suitcases": "suitcase", "glasses": "glass", "buses": "bus", "lenses": "lens", "octopuses": "octopus",
    "dresses": "dress", "bases": "base", "purses": "purse", "nurses": "nurse", "bottles": "bottle",
    "canoes": "canoe", "shoes": "shoe", "toes": "toe", "hoes": "hoe", "axes": "axe", "giraffes": "giraffe",
    "clothes": "clothes", "phones": "phone", "cones": "cone", "bones": "bone", "stones": "stone",
    "drones": "drone", "planes": "plane", "lanes": "lane", "cranes": "crane", "snakes": "snake",
    "cakes": "cake", "lakes": "lake", "tables": "table", "apples": "apple", "candles": "candle",
    "turtles": "turtle", "bicycles": "bicycle", "motorcycles": "motorcycle", "vehicles": "vehicle",
    "puzzles": "puzzle", "eagles": "eagle", "beetles": "beetle", "needles": "needle", "kettles": "kettle",
    "bowls": "bowl", "dogs": "dog", "bees": "bee", "trees": "tree", "knees": "knee", "monkeys": "monkey",
    "keys": "key", "donkeys": "donkey", "turkeys": "turkey", "toys": "toy", "boys": "boy", "trays": "tray",
    "days": "day", "ways": "way", "guys": "guy", "pianos": "piano", "photos": "photo", "zoos": "zoo",
    "kangaroos": "kangaroo", "tattoos": "tattoo", "radios": "radio", "videos": "video", "avocados": "avocado",
    "eyes": "eye", "dyes": "dye", "ladies": "lady", "babies": "baby", "puppies": "puppy", "kitties": "kitty",
    "bunnies": "bunny", "ponies": "pony", "cherries": "cherry", "berries": "berry", "strawberries": "strawberry",
    "butterflies": "butterfly", "dragonflies": "dragonfly", "flies": "fly", "skies": "sky", "cities": "city",
    "toothbrushes": "toothbrush", "sandwiches": "sandwich", "benches": "bench", "boxes": "box",
    "foxes": "fox", "watches": "watch", "dishes": "dish", "brushes": "brush", "peaches": "peach",
    "beaches": "beach", "churches": "church", "couches": "couch", "torches": "torch", "witches": "witch",
    "bushes": "bush",
}
